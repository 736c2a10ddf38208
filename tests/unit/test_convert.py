"""`recostream convert`: public logs to the replay CSV, checked on small files in each format."""

from __future__ import annotations

import json

from click.testing import CliRunner

from streams.cli import cli
from streams.tools.replay import read_events


def _run(tmp_path, fmt: str, text: str) -> tuple[dict, list[str]]:
    src, dst = tmp_path / f"in-{fmt}.csv", tmp_path / f"out-{fmt}.csv"
    src.write_text(text)
    result = CliRunner().invoke(cli, ["convert", str(src), str(dst), "--format", fmt])
    assert result.exit_code == 0, result.output
    return json.loads(result.output.strip().splitlines()[-1]), dst.read_text().splitlines()


def test_movielens_ratings(tmp_path):
    summary, lines = _run(tmp_path, "movielens", "userId,movieId,rating,timestamp\n"
                          "1,31,2.5,1260759144\n1,1029,3.0,1260759179\n1,1061,4.0,1260759100\n2,10,4.0,835355493\n")
    assert lines == ["timestamp,user_id,item_id,event_type", "2009-12-14T02:51:40Z,u1,i1061,purchase",
                     "2009-12-14T02:52:24Z,u1,i31,browse", "2009-12-14T02:52:59Z,u1,i1029,click"]
    assert summary["events"] == 3 and summary["customers_dropped"] == 1  # u2 has one event


def test_the_older_movielens_releases(tmp_path):
    tab = "1\t31\t2\t1260759144\n1\t1029\t3\t1260759179\n1\t1061\t4\t1260759100\nbroken\n"
    summary, lines = _run(tmp_path, "movielens-dat", tab)  # 100K u.data
    assert lines == ["timestamp,user_id,item_id,event_type", "2009-12-14T02:51:40Z,u1,i1061,purchase",
                     "2009-12-14T02:52:24Z,u1,i31,browse", "2009-12-14T02:52:59Z,u1,i1029,click"]
    assert summary["rows_unparsed"] == 1
    _, colons = _run(tmp_path, "movielens-dat", tab.replace("\t", "::").replace("broken\n", ""))  # 1M ratings.dat
    assert colons == lines


def test_taobao_user_behavior_and_bad_rows(tmp_path):
    summary, lines = _run(tmp_path, "taobao", "1,2268318,2520377,pv,1511544070\n1,2333346,2520771,cart,1511561733\n"
                          "1,2576651,149192,buy,1511572885\n1,1,1,wishlist,1511572886\nbroken\n")
    assert lines[1:] == ["1511544070000,1,2268318,browse", "1511561733000,1,2333346,click",
                         "1511572885000,1,2576651,purchase"]
    assert summary["rows_unparsed"] == 2


def test_retailrocket_and_yoochoose_read_back_by_replay(tmp_path):
    _, rr = _run(tmp_path, "retailrocket", "timestamp,visitorid,event,itemid,transactionid\n"
                 "1433221332117,257597,view,355908,\n1433224214164,257597,addtocart,248676,\n"
                 "1433221999827,257597,transaction,111016,11\n")
    assert [line.split(",")[3] for line in rr[1:]] == ["browse", "purchase", "click"]
    _, yc = _run(tmp_path, "yoochoose", "1,2014-04-07T10:51:09.277Z,214536502,0\n"
                 "1,2014-04-07T10:54:09.868Z,214536500,0\n")
    assert yc[1:] == ["1396867869277,1,214536502,browse", "1396868049868,1,214536500,browse"]
    events, bad = read_events(str(tmp_path / "out-yoochoose.csv"))
    assert bad == 0 and len(events) == 2


def test_rees46_store_logs(tmp_path):
    header = "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session\n"
    summary, lines = _run(tmp_path, "rees46", header
                          + "2019-10-01 00:00:00 UTC,view,44600062,2103807459595387724,,shiseido,35.79,541312140,s1\n"
                          + "2019-10-01 00:00:05 UTC,cart,3900821,2053013552326770905,,aqua,33.20,541312140,s1\n"
                          + "2019-10-01 00:00:06 UTC,remove_from_cart,3900821,2053013552326770905,,aqua,33.20,541312140,s1\n"
                          + "2019-10-01 00:01:00 UTC,purchase,3900821,2053013552326770905,,aqua,33.20,541312140,s1\n"
                          + "2019-10-01 00:02:00 UTC,refund,1,1,,,1.0,541312140,s1\n")
    assert lines[1:] == ["1569888000000,541312140,44600062,browse", "1569888005000,541312140,3900821,click",
                         "1569888060000,541312140,3900821,purchase"]
    assert summary["rows_unparsed"] == 1  # the unknown event type; remove_from_cart is skipped, not bad


def test_diginetica_item_views(tmp_path):
    summary, lines = _run(tmp_path, "diginetica", "sessionId;userId;itemId;timeframe;eventdate\n"
                          "1;NA;81766;526309;2016-05-09\n1;NA;31331;1031018;2016-05-09\n"
                          "2;5;32118;1500;2016-05-09\n2;5;32119;2500;2016-05-09\n2;5;x;not-a-number;2016-05-09\n3;NA;7;0;2016-05-10\n")
    # A view is at midnight UTC of its session's date plus its offset; a session is a customer.
    assert lines[1:] == ["1462752001500,2,32118,browse", "1462752002500,2,32119,browse",
                         "1462752526309,1,81766,browse", "1462753031018,1,31331,browse"]
    assert summary["rows_unparsed"] == 1 and summary["customers_dropped"] == 1  # customer "3" has one view


def test_categories_are_written_where_the_format_has_them_and_read_back_by_replay(tmp_path):
    logs = {
        "taobao": "1,2268318,2520377,pv,1511544070\n1,2333346,2520771,cart,1511561733\n",
        "rees46": "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session\n"
                  "2019-10-01 00:00:00 UTC,view,44600062,2103807459595387724,,shiseido,35.79,541312140,s1\n"
                  "2019-10-01 00:00:05 UTC,cart,3900821,,,aqua,33.20,541312140,s1\n",
        "yoochoose": "1,2014-04-07T10:51:09.277Z,214536502,0\n1,2014-04-07T10:54:09.868Z,214536500,7\n"
                     "1,2014-04-07T10:55:09.868Z,214536501,S\n",
        "movielens": "userId,movieId,rating,timestamp\n1,31,2.5,1260759144\n1,1029,3.0,1260759179\n",
    }
    expected = {"taobao": {"2268318": "2520377", "2333346": "2520771"}, "rees46": {"44600062": "2103807459595387724"},
                "yoochoose": {"214536500": "7"}, "movielens": {}}
    for fmt, text in logs.items():
        src, dst = tmp_path / f"in-{fmt}.csv", tmp_path / f"out-{fmt}.csv"
        src.write_text(text)
        result = CliRunner().invoke(cli, ["convert", str(src), str(dst), "--format", fmt, "--categories"])
        assert result.exit_code == 0, result.output
        summary = json.loads(result.output.strip().splitlines()[-1])
        assert dst.read_text().splitlines()[0] == "timestamp,user_id,item_id,event_type,category"
        categories: dict[str, str] = {}
        events, bad = read_events(str(dst), categories=categories)
        assert bad == 0 and len(events) == len(text.strip().splitlines()) - (fmt in ("rees46", "movielens"))
        assert categories == expected[fmt] and summary["items_with_category"] == len(expected[fmt]), fmt

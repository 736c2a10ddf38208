"""Operator commands on the control topic, handled by the worker that owns the customer."""

from __future__ import annotations

import msgspec

from streams.contract import ContractError
from streams.privacy import ACTIONS, decode_command


def register(app) -> None:
    @app.agent(app.control_topic, name="control")
    async def control(stream):
        """A forget command erases the customer from profiles, models and Redis."""
        async for event in stream.events():
            try:
                command = decode_command(event.message.value or b"")
                if command.action not in ACTIONS:
                    raise ContractError("invalid_value", f"unknown control action {command.action[:40]!r}")
            except (msgspec.DecodeError, ContractError) as exc:
                err = exc if isinstance(exc, ContractError) else ContractError("invalid_value", f"control message: {exc}")
                app.processor.send_dead_letter(err, event.message)
                continue
            async with app.checkpoints.lock:  # never in the middle of a batch
                await app.processor.forget(command.user_id, event.message.partition)
                await app.checkpoints.save_locked()  # no saved model may keep the customer

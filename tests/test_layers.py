"""The one-process channel layer keeps channels' semantics while dropping per-message costs."""

from __future__ import annotations

import asyncio

import pytest
from channels.exceptions import ChannelFull

from chat.ops.layers import LocalChannelLayer


async def test_group_send_reaches_every_member_in_order() -> None:
    layer = LocalChannelLayer()
    channels = [await layer.new_channel() for _ in range(3)]
    for channel in channels:
        await layer.group_add("conversation-1", channel)
    for seq in range(5):
        await layer.group_send("conversation-1", {"type": "chat.frame", "seq": seq})
    for channel in channels:
        assert [(await layer.receive(channel))["seq"] for _ in range(5)] == list(range(5))


async def test_a_full_member_does_not_block_the_others(caplog: pytest.LogCaptureFixture) -> None:
    layer = LocalChannelLayer(capacity=2)
    stuck, live = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("g", stuck)
    await layer.group_add("g", live)
    for seq in range(3):
        await layer.group_send("g", {"type": "x", "seq": seq})
        assert (await layer.receive(live))["seq"] == seq
    with pytest.raises(ChannelFull):
        await layer.send(stuck, {"type": "x"})
    assert "is full: a x message was dropped" in caplog.text  # never silently


async def test_messages_are_copies() -> None:
    layer = LocalChannelLayer()
    channel = await layer.new_channel()
    nested = {"type": "x", "items": [1]}
    await layer.send(channel, nested)
    nested["items"].append(2)
    assert (await layer.receive(channel))["items"] == [1]


async def test_expired_messages_are_dropped() -> None:
    layer = LocalChannelLayer(expiry=0.2)
    layer.sweep_interval = 0
    channel, other = await layer.new_channel(), await layer.new_channel()
    await layer.send(channel, {"type": "old"})
    await asyncio.sleep(0.3)
    await layer.send(other, {"type": "new"})
    assert (await layer.receive(other))["type"] == "new"
    assert channel not in layer.channels

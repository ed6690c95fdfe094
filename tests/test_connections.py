"""The WebSocket connection store: a connection bound to its user at `$connect`."""

import pytest

from chalicelib.connections import CONNECTION_TTL_SECONDS, Connections
from chalicelib.errors import Unauthorized

NOW = 1_800_000_000


def test_connection_items_bind_a_connection_to_its_user(dynamodb):
    clock = [float(NOW)]
    connections = Connections(dynamodb, "chat-test", clock=lambda: clock[0])

    connections.open("abc=", "user-1")
    item = dynamodb.get_item(TableName="chat-test", Key={"sessionid": {"S": "~connection/abc="},
                                                         "turn": {"S": "!connection"}})["Item"]
    assert item["owner"] == {"S": "user-1"}
    assert int(item["expires_at"]["N"]) == NOW + CONNECTION_TTL_SECONDS
    assert connections.owner("abc=") == "user-1"
    with pytest.raises(Unauthorized):
        connections.owner("other=")
    clock[0] += CONNECTION_TTL_SECONDS  # expired, not yet deleted by TTL
    with pytest.raises(Unauthorized):
        connections.owner("abc=")
    connections.close("abc=")
    assert "Item" not in dynamodb.get_item(TableName="chat-test", Key={"sessionid": {"S": "~connection/abc="},
                                                                       "turn": {"S": "!connection"}})

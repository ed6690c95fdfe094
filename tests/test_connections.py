"""The WebSocket connection store: a connection bound to its user at `$connect`."""

import pytest

from chalicelib.connections import MAX_CONNECTION_SECONDS, Connections
from chalicelib.errors import Unauthorized

NOW = 1_800_000_000


def item(dynamodb, connection_id):
    return dynamodb.get_item(TableName="chat-test", Key={"sessionid": {"S": f"~connection/{connection_id}"},
                                                         "turn": {"S": "!connection"}}).get("Item")


def test_connection_items_bind_a_connection_to_its_user_until_its_token_expires(dynamodb):
    clock = [float(NOW)]
    connections = Connections(dynamodb, "chat-test", clock=lambda: clock[0])

    connections.open("abc=", "user-1", token_expires_at=NOW + 600)

    assert item(dynamodb, "abc=")["owner"] == {"S": "user-1"}
    assert int(item(dynamodb, "abc=")["expires_at"]["N"]) == NOW + 600
    assert connections.owner("abc=") == "user-1"
    with pytest.raises(Unauthorized, match="not signed in"):
        connections.owner("other=")
    clock[0] += 600  # the token has expired; the item is not yet deleted by TTL
    with pytest.raises(Unauthorized, match="has expired"):
        connections.owner("abc=")
    connections.close("abc=")
    assert item(dynamodb, "abc=") is None


def test_a_connection_lasts_no_longer_than_api_gateway_keeps_it(dynamodb):
    connections = Connections(dynamodb, "chat-test", clock=lambda: NOW)

    connections.open("abc=", "user-1", token_expires_at=NOW + 24 * 3600)

    assert int(item(dynamodb, "abc=")["expires_at"]["N"]) == NOW + MAX_CONNECTION_SECONDS

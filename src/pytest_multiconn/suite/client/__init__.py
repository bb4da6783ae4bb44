"""The client suite: how a client behaves when the network misbehaves.

``check_client(call, exchange=..., expect=..., idempotent=..., timeout=...)`` runs one
scenario per row against ``call(address)`` (one request with your client) through a fault
proxy, in front of your server (``target=``) or one of ours; ``acheck_client`` does the same
for an async client.  Arrows point down: ``checks`` -> ``runner`` -> ``rows`` -> ``scene``
-> ``serve``/``toxics``/``framing``/``outcome`` -> the suite's ``model``.
"""

from pytest_multiconn.suite.client.checks import CLIENT_ROW_NAMES, acheck_client, check_client

__all__ = ["CLIENT_ROW_NAMES", "acheck_client", "check_client"]

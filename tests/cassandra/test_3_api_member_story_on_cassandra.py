"""The end-to-end `member_story` API tests, with the server's store on the 3-node cluster.

The tests are the SQLite ones, imported; this folder's conftest gives them
servers whose store URL points at Cassandra.
"""

import pytest

from tests.e2e.test_api_member_story import *  # noqa: F403

pytestmark = [pytest.mark.cassandra]

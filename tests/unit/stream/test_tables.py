"""Table helpers that know Faust's layout: one campaign's windows read from the windowed
table (``campaign_windows``). The fan-state store is tested through the ledger."""

from __future__ import annotations

import tempfile
from types import SimpleNamespace
from typing import Any

import rocksdict
from faust.serializers import codecs

from vfstream.stream.tables import campaign_windows


def test_one_campaigns_windows_are_read_by_their_key_prefix_in_rocksdb() -> None:
    def key(campaign: str, start: float) -> bytes:
        return codecs.dumps("json", (campaign, (start, start + 59.9)))

    dbs = [rocksdict.Rdict(tempfile.mkdtemp(), options=rocksdict.Options(raw_mode=True))]
    dbs.append(rocksdict.Rdict(tempfile.mkdtemp(), options=rocksdict.Options(raw_mode=True)))
    for n, campaign in enumerate(["c1", "c10", "c", 'c1"', "c1", "d"] * 3):
        dbs[n % 2][key(campaign, 60.0 * n)] = f"{n}".encode()

    class Store:
        use_rocksdict = True

        def _dbs_for_actives(self) -> Any:
            return iter(dbs)

        def items(self) -> Any:
            for db in dbs:
                for k, v in db.items():
                    yield codecs.loads("json", k), v

    table = SimpleNamespace(data=Store(), key_serializer="json")
    got = sorted((k[1][0], v) for k, v in campaign_windows(table, "c1"))
    everything = sorted((k[1][0], v) for k, v in Store().items() if k[0] == "c1")
    assert got == everything and len(got) == 6
    table.data.use_rocksdict = False  # another store: scanned whole, same answer
    assert sorted((k[1][0], v) for k, v in campaign_windows(table, "c1")) == everything
    for db in dbs:
        db.close()

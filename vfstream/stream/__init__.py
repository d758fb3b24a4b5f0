"""Everything that knows Faust. Read ``topology`` first: the topics, the four tables and the
three thin agents, as the pipeline runs. ``assembly`` builds the worker: the app, its
transport and the topology, and the parts that run beside the agents (relays, the
notification listener, timers, diagnostics) as small services with ``start``/``stop``, the
web routes and Prometheus. Beside them: the Faust app's configuration and flow control
(``app``), the transport with its one hook (``transport.install_transport``), the tally's
glue to its tables (``tally``), the table helpers, the partition reader, and the
verification ledger in two halves: its delivery bookkeeping (``verification``: generations,
gap and tail fills, positions, held-back acks, flushes, re-announcements) and its counting
(``counting``: plain synchronous code, no asyncio or Faust, that applies a batch's rows to
fan states, partials and run tallies and says what a flush writes). The exact-count rules
they apply are in ``vfstream.domain``.
What Faust decides that others need to know (a changelog's name, where a table's files
are, which worker owns which partition) is answered by ``layout``; ops, sinks and web ask
it. Outside this package only the web views use Faust, through its public web API (pages,
views, the app's HTTP session).

Reaches into private attributes of Faust, mode and aiokafka, all of them (pinned versions:
faust-streaming 0.15.3, mode-streaming 0.7.1, aiokafka 0.14.0, rocksdict 0.3.29 in
``pyproject.toml``). ``tests/unit/stream/test_private_reaches.py`` fails loudly, naming the
reach, when an upgrade removes or changes one:

1. ``transport.CommittedReadConsumerThread._create_worker_consumer`` overrides Faust's
   private factory to set aiokafka's ``AIOKafkaConsumer._isolation_level`` to
   ``read_committed`` before the consumer starts (Faust reads committed data only in its
   exactly-once mode, which vfstream does not use).
2. ``transport.CommittedReadConsumerThread._fetch_records`` wraps Faust's private fetch to
   record the offsets a fetch passed without a record (``FetchedGaps``).
3. ``transport.CommittedReadConsumerThread.seek_to_resume_offsets`` calls Faust's private
   ``_ensure_consumer`` (the thread's aiokafka consumer) and ``Consumer._is_changelog_tp``.
4. ``transport.CommittedReadConsumer`` overrides ``_new_consumer_thread`` and reads
   ``_thread`` (``ThreadDelegateConsumer``) to seek score partitions to resume offsets.
5. ``app.raw_table`` calls ``Collection._new_changelog_topic`` so a table's changelog uses
   the raw serializers the web router hashes keys with.
6. ``tables.FanStateStore`` reads ``rocksdb.Store._db_for_partition`` to write a batch of
   fan states to one partition's RocksDB in one ``WriteBatch``.
7. ``app.StreamApp.flow_control`` replaces Faust's ``App.flow_control`` (a mode
   ``FlowControlEvent``) so resuming a flowing app keeps queued events.
8. ``tests/unit/stream/test_faust_commit_gap.py`` pins ``Consumer._new_offset``'s bookkeeping
   down (why the ledger records its own positions).
9. ``tables.campaign_windows`` reads ``rocksdb.Store._dbs_for_actives`` to read one
   campaign's windows by key prefix from each active partition's RocksDB.
"""

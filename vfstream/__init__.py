"""vfstream: Verified Fan scoring as a Faust stream processor on Apache Kafka."""

__version__ = "0.1.0"

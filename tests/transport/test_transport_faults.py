from fraudfl.transport.base import TopicSpec
from fraudfl.transport.memory import MemoryBroker, MemoryTransport
from tests.transport.faults import DuplicatingTransport


def test_duplicating_transport_sends_copies_and_forwards_the_rest() -> None:
    broker = MemoryBroker()
    dup = DuplicatingTransport(MemoryTransport(broker), copies=3)
    dup.create_topics([TopicSpec("t", 1)])
    assert "t" in dup.list_topics() and dup.partitions_for("t") == 1
    dup.send("t", b"k", b"v")
    dup.flush()
    dup.assign_topics(["t"])
    assert [r.value for r in dup.poll(0.0)] == [b"v"] * 3
    dup.close()

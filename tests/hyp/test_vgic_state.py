"""GIC save/load for live migration: plain versioned data, a restored GIC behaves exactly as
the original (random operation sequences), malformed states are refused by name and leave
the GIC unchanged, and a restore re-announces every CPU's output."""
import copy
import json
import re

import pytest
from hypothesis import given, settings, strategies as st

from hyp.migration.state import StateError
from hyp.vgic import Gic, GicStateError

_DIST_OFFSETS = ([0x000] + [base + 4 * n for base in range(0x080, 0x400, 0x80) for n in (0, 1)]
                 + [0xC04, 0xC08, 0xC0C, 0xF00])
_DIST_BYTES = ([0x400 + i for i in range(64)] + [0x800 + i for i in range(32, 64)]
               + [0xF10 + i for i in range(32)])
_CPU_WRITES = [0x00, 0x04, 0x08, 0x1C, 0x10, 0x24, 0x1000, 0xD0]
_CPU_READS = [0x0C, 0x20, 0x18, 0x28, 0x14]


def _ops(ncpus: int):
    cpu = st.integers(0, ncpus - 1)
    word = st.one_of(st.integers(0, 0xFFFF_FFFF), st.integers(0, 63),
                     st.sampled_from([1, 3, 0xF0, 0x200, 0x204, 0x0100_0003, 0x0003_0005]))
    return st.one_of(
        st.tuples(st.just("ppi"), st.integers(16, 31), st.booleans(), cpu),
        st.tuples(st.just("spi"), st.integers(32, 63), st.booleans()),
        st.tuples(st.just("sgi"), cpu, st.integers(0, 15), st.integers(0, (1 << ncpus) - 1)),
        st.tuples(st.just("dw"), cpu, st.sampled_from(_DIST_OFFSETS), word),
        st.tuples(st.just("db"), cpu, st.sampled_from(_DIST_BYTES), st.integers(0, 255)),
        st.tuples(st.just("cw"), cpu, st.sampled_from(_CPU_WRITES), word),
        st.tuples(st.just("cr"), cpu, st.sampled_from(_CPU_READS)),
        st.tuples(st.just("cr"), cpu, st.just(0x0C)),                   # GICC_IAR
        st.tuples(st.just("cw"), cpu, st.just(0x10), st.integers(0, 63)),  # GICC_EOIR
    )


def _apply(gic: Gic, op) -> object:
    """Do one operation; return what the guest or machine would observe."""
    kind = op[0]
    if kind == "ppi":
        gic.set_line(op[1], op[2], op[3])
    elif kind == "spi":
        gic.set_line(op[1], op[2])
    elif kind == "sgi":
        gic.send_sgi(*op[1:])
    elif kind == "dw":
        gic.distributor.mmio_write(op[1], op[2], 4, op[3])
    elif kind == "db":
        gic.distributor.mmio_write(op[1], op[2], 1, op[3])
    elif kind == "cw":
        gic.cpu_interface.mmio_write(op[1], op[2], 4, op[3])
    else:
        return gic.cpu_interface.mmio_read(op[1], op[2], 4)
    return [(gic.irq_pending(c), gic.fiq_pending(c)) for c in range(gic.geometry.num_cpus)]


@st.composite
def _scenario(draw):
    """A prologue that turns the GIC on as a guest would (so interrupts really flow), then
    random operations; the snapshot may be taken anywhere, prologue included."""
    ncpus = draw(st.integers(1, 3))
    ops = [("dw", 0, 0x000, draw(st.sampled_from([1, 3])))]
    for cpu in range(ncpus):
        ops += [("cw", cpu, 0x00, draw(st.sampled_from([1, 3, 7, 0x0B, 0x13, 0x201]))),
                ("cw", cpu, 0x04, 0xF0),
                ("dw", cpu, 0x100, draw(st.integers(0, 0xFFFF_FFFF)))]
    ops += [("dw", 0, 0x104, draw(st.integers(0, 0xFFFF_FFFF))),
            ("dw", 0, 0x084, draw(st.integers(0, 0xFFFF_FFFF)))]
    ops += [("dw", 0, 0x820 + 4 * n, draw(st.integers(0, 0xFFFF_FFFF))) for n in range(8)]
    ops += draw(st.lists(_ops(ncpus), min_size=20, max_size=80))
    return ncpus, ops, draw(st.integers(0, len(ops)))


@settings(max_examples=150, deadline=None)
@given(_scenario())
def test_restored_gic_behaves_identically(scenario):
    ncpus, ops, split = scenario
    src = Gic(ncpus, 64)
    for op in ops[:split]:
        _apply(src, op)
    snapshot = json.loads(json.dumps(src.save_state()))    # what the stream carries
    dst = Gic(ncpus, 64)
    dst.load_state(snapshot)
    assert dst.save_state() == src.save_state()
    for op in ops[split:]:
        assert _apply(dst, op) == _apply(src, op), op
        # invariant: the outputs kept up to date (maybe for one CPU only) are what a full
        # recomputation from the state gives
        assert [src._output(c) for c in range(ncpus)] == [
            (src.irq_pending(c), src.fiq_pending(c)) for c in range(ncpus)], op
    assert dst.save_state() == src.save_state()


def _busy() -> Gic:
    """A GIC with something in every kind of state."""
    gic = Gic(2, 64, priority_bits=5)
    d, c = gic.distributor, gic.cpu_interface
    d.mmio_write(0, 0x000, 4, 3)
    for cpu in (0, 1):
        c.mmio_write(cpu, 0x00, 4, 1)
        c.mmio_write(cpu, 0x04, 4, 0xF0)
        d.mmio_write(cpu, 0x100, 4, 1 << 27)
    d.mmio_write(0, 0x104, 4, 0xFFFF_FFFF)
    d.mmio_write(0, 0x428, 4, 0x8040_2010)
    d.mmio_write(0, 0x828, 4, 0x0302_0101)
    d.mmio_write(0, 0xC08, 4, 0x0000_0020)
    gic.set_line(27, True, cpu=1)
    gic.set_line(40, True)
    gic.send_sgi(1, 2, 0b01)
    assert c.mmio_read(0, 0x0C, 4) == 2 | 1 << 10
    gic.send_sgi(0, 2, 0b01)
    return gic


def test_state_is_plain_versioned_data():
    state = _busy().save_state()
    assert json.loads(json.dumps(state)) == state
    assert state["version"] == 1 and state["num_cpus"] == 2
    assert state["distributor"]["level"][1] == 1 << 8           # SPI 40's line
    assert state["cpus"][1]["level"] == 1 << 27                 # CPU 1's PPI 27
    assert state["cpus"][0]["sgi_sources"][2] == 0b01           # SGI 2 from CPU 0 pending
    assert state["cpus"][0]["active"] == 1 << 2 and state["cpus"][0]["apr"] == [1]


def test_restore_reasserts_every_line():
    src = _busy()
    dst = Gic(2, 64)
    heard = []
    dst.add_listener(lambda cpu, irq, fiq: heard.append((cpu, irq, fiq)))
    dst.load_state(src.save_state())
    assert heard == [(0, src.irq_pending(0), False), (1, src.irq_pending(1), False)]
    assert dst.irq_pending(1)


def _set(path, value):
    def mutate(state):
        obj = state
        for key in path[:-1]:
            obj = obj[key]
        obj[path[-1]] = value
        return state
    return mutate


def _drop(path):
    def mutate(state):
        obj = state
        for key in path[:-1]:
            obj = obj[key]
        del obj[path[-1]]
        return state
    return mutate


MALFORMED = [
    pytest.param(lambda s: [s], "not a dict", id="not-a-dict"),
    pytest.param(_set(["version"], 2), "version 2", id="version"),
    pytest.param(_set(["num_cpus"], 4), "num_cpus=4", id="other-cpu-count"),
    pytest.param(_set(["num_irqs"], 96), "num_irqs=96", id="other-irq-count"),
    pytest.param(_set(["priority_bits"], 8), "priority_bits=8", id="other-priority-bits"),
    pytest.param(_drop(["distributor"]), "missing ['distributor']", id="missing-distributor"),
    pytest.param(_set(["extra"], 1), "unknown ['extra']", id="unknown-key"),
    pytest.param(_drop(["cpus", 1, "pmr"]), "cpus[1]: missing ['pmr']", id="missing-field"),
    pytest.param(_set(["cpus"], [{}]), "cpus has 1 entries", id="too-few-cpus"),
    pytest.param(_set(["distributor", "enabled"], [0]), "enabled has 1 entries",
                 id="short-bitmap"),
    pytest.param(_set(["distributor", "enabled", 0], 1), "bit for interrupt 0",
                 id="banked-bit-in-distributor"),
    pytest.param(_set(["distributor", "pending", 1], "1"), "pending[1] = '1'", id="string"),
    pytest.param(_set(["distributor", "active", 1], True), "active[1] = True", id="bool"),
    pytest.param(_set(["distributor", "level", 1], -1), "level[1] = -1", id="negative"),
    pytest.param(_set(["distributor", "priority", 40], 0x44), "priority[40] = 0x44",
                 id="unimplemented-priority-bits"),
    pytest.param(_set(["distributor", "priority", 3], 0x40), "priority[3]",
                 id="banked-priority-in-distributor"),
    pytest.param(_set(["distributor", "targets", 40], 0x4), "targets[40] = 0x4",
                 id="absent-cpu-target"),
    pytest.param(_set(["distributor", "ctlr"], 4), "ctlr = 0x4", id="gicd-ctlr-bits"),
    pytest.param(_set(["cpus", 0, "enabled"], 0), "SGIs are always enabled", id="sgi-disabled"),
    pytest.param(_set(["cpus", 0, "pending"], 1), "cpus[0].pending", id="sgi-pending-latch"),
    pytest.param(_set(["cpus", 0, "bpr"], 1), "below the minimum 2", id="bpr-below-min"),
    pytest.param(_set(["cpus", 0, "abpr"], 8), "abpr = 0x8", id="abpr-too-wide"),
    pytest.param(_set(["cpus", 0, "pmr"], 0xFF), "pmr = 0xff", id="pmr-low-bits"),
    pytest.param(_set(["cpus", 0, "sgi_sources", 2], 4), "sgi_sources[2]", id="sgi-source"),
    pytest.param(_set(["cpus", 0, "apr"], [1, 0]), "apr has 2 entries", id="apr-count"),
    pytest.param(_set(["cpus", 0, "ctlr"], 1 << 10), "cpus[0].ctlr", id="gicc-ctlr-bits"),
]


@pytest.mark.parametrize("mutate, message", MALFORMED)
def test_malformed_state_is_refused_and_changes_nothing(mutate, message):
    gic = Gic(2, 64)
    gic.set_line(40, True)
    before = gic.save_state()
    heard = []
    gic.add_listener(lambda *a: heard.append(a))
    bad = mutate(copy.deepcopy(_busy().save_state()))
    with pytest.raises(GicStateError, match=re.escape(message)) as e:
        gic.load_state(bad)
    assert isinstance(e.value, StateError) and isinstance(e.value, ValueError)
    assert gic.save_state() == before and heard == []


def test_device_protocol_aliases():
    gic = _busy()
    assert gic.name == "gic" and gic.state_version == 1
    other = Gic(2, 64)
    saved = gic.save()
    other.load(saved)
    assert other.save() == gic.save_state()
    saved["cpus"][0]["priority"][0] = 0x80                      # the GIC kept no reference
    assert other.save() == gic.save_state()

"""Tests for cadvisor_events.gate: a bounded number of requests, streams before histories."""

from twisted.trial import unittest

from cadvisor_events.gate import ConnectGate


class ConnectGateTests(unittest.TestCase):
    def test_bounds_slots(self):
        gate = ConnectGate(2)
        first, second, third = gate.acquire(), gate.acquire(False), gate.acquire()
        self.assertEqual([d.called for d in (first, second, third)], [True, True, False])
        self.assertEqual((gate.held, gate.waiting), (2, 1))
        gate.release()
        self.assertTrue(third.called)
        self.assertEqual((gate.held, gate.waiting), (2, 0))

    def test_a_waiting_stream_goes_before_an_older_waiting_history(self):
        gate = ConnectGate(1)
        gate.acquire()
        order = []
        for name, stream in (("history 1", False), ("stream 1", True), ("history 2", False), ("stream 2", True)):
            gate.acquire(stream).addCallback(lambda _, name=name: order.append(name))
        for _ in range(4):
            gate.release()
        self.assertEqual(order, ["stream 1", "stream 2", "history 1", "history 2"])
        self.assertEqual(gate.held, 1)

    def test_a_new_history_waits_while_histories_wait_but_a_stream_need_not(self):
        gate = ConnectGate(1)
        gate.acquire()
        waiting = gate.acquire(False)
        gate.release()
        self.assertTrue(waiting.called)
        gate.release()
        self.assertTrue(gate.acquire(False).called)  # a free slot and no queue: at once

    def test_a_cancelled_wait_is_passed_over(self):
        gate = ConnectGate(1)
        gate.acquire()
        gone, kept = gate.acquire(), gate.acquire(False)
        gone.cancel()
        self.failureResultOf(gone)
        gate.release()
        self.assertTrue(kept.called)
        self.assertEqual((gate.held, gate.waiting), (1, 0))

    def test_misuse_is_an_error(self):
        self.assertRaises(ValueError, ConnectGate, 0)
        self.assertRaises(RuntimeError, ConnectGate(1).release)

"""The filters the status page, /targets and /oom-kills share: parsing, state groups, text."""

from twisted.trial import unittest

from cadvisor_events.fleetquery import DEFAULT_LIMIT, BadQuery, TargetQuery, select_targets

from .support import fleet_of


def query(**args) -> TargetQuery:
    return TargetQuery.from_args({k.encode(): [str(v).encode()] for k, v in args.items()})


class QueryTests(unittest.TestCase):
    def test_defaults(self):
        q = query()
        self.assertEqual((q.state, q.text, q.limit, q.offset, q.given), ("all", "", DEFAULT_LIMIT, 0, False))

    def test_bad_values_name_the_parameter(self):
        for args, word in [({"state": "sideways"}, "state="), ({"limit": "x"}, "limit="), ({"limit": 0}, "limit="),
                           ({"limit": 5000}, "limit="), ({"offset": -1}, "offset=")]:
            with self.assertRaises(BadQuery) as raised:
                query(**args)
            self.assertIn(word, str(raised.exception))

    def test_link_keeps_the_filters_and_leaves_defaults_out(self):
        self.assertEqual(query(state="down", q="eu zone").link(offset=100), "?state=down&q=eu+zone&offset=100")
        self.assertEqual(query().link(), "?")


class SelectTests(unittest.TestCase):
    def setUp(self):
        self.fleet = fleet_of(up=30, down=5, connecting=3)

    def test_unhealthy_first_and_counts_of_the_whole_fleet(self):
        selected, counts = select_targets(self.fleet, query())
        states = [f.state for _, f in selected]
        self.assertEqual(states, ["down"] * 5 + ["connecting"] * 3 + ["up"] * 30)
        self.assertEqual(counts, {"down": 5, "connecting": 3, "up": 30, "total": 38})
        self.assertEqual([name for name, _ in selected[:2]], ["down-00000:8080", "down-00001:8080"])

    def test_state_filters(self):
        for state, expected in [("down", 5), ("connecting", 3), ("up", 30), ("unhealthy", 8), ("all", 38)]:
            selected, counts = select_targets(self.fleet, query(state=state))
            self.assertEqual(len(selected), expected, state)
            self.assertEqual(counts["total"], 38)

    def test_text_matches_host_labels_and_error_case_insensitively(self):
        self.assertEqual(len(select_targets(self.fleet, query(q="UP-0001"))[0]), 10)  # up-00010 .. up-00019
        self.assertEqual(len(select_targets(self.fleet, query(q="zone=eu"))[0]), 19)
        self.assertEqual(len(select_targets(self.fleet, query(q="refused"))[0]), 5)
        self.assertEqual(len(select_targets(self.fleet, query(q="refused", state="up"))[0]), 0)
        self.assertEqual(len(select_targets(self.fleet, query(q="nothing like it"))[0]), 0)

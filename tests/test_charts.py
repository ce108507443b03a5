"""The status page's inline SVG charts."""

from twisted.trial import unittest

from cadvisor_events.charts import events_chart, kills_chart


class ChartTests(unittest.TestCase):
    def test_scaled_to_the_busiest_minute_and_escaped(self):
        svg = events_chart({"<odd>": [0, 5, 10]}, 3)
        self.assertIn("&lt;odd&gt;: 15", svg)
        self.assertNotIn("<odd>", svg)
        self.assertIn(">10</text>", svg)
        self.assertEqual(kills_chart([0, 2, 1]).count("<rect class='bar'"), 3)

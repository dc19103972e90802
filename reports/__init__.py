"""Renderers: results tables and the HTML report. They read results; they never recompute them."""

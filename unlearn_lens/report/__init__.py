"""Rendering: rich terminal tables, PNG figures and the self-contained HTML report."""

"""The Stories domain: aggregates, their events and rules. Pure Python: no I/O, no frameworks.

Every change is an event recorded by an aggregate method after the rules were checked, so a
method that raises has recorded nothing. The clock is a parameter (``now``), never read here.
"""

"""Seed assembly: the public raw safety datasets mapped onto the taxonomy, deduplicated and split.

mapping.py (label tables + keyword rules), sources.py (one reader per raw source), select.py
(normalise, dedup, subsample), split.py (grouped split), card.py (data card), assemble.py (stage).
"""

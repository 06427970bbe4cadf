"""The weight plane: from learner rank 0 to every engine.

Imports none of `actors`, `learner`, `buffer`.
"""

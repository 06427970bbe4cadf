"""Scoring the tokens an engine sampled: masked logprobs under choice constraints, grammar masks (xgrammar) and packed token bitmasks."""

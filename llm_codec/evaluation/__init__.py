"""Evaluation: few-shot classification episodes and codec quality, with `evaluate` metric modules shipped inside."""

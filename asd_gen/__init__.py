"""Answer Style Diversification: turn a share of each task's records into the other four answer styles."""

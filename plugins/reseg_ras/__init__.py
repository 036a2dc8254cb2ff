"""RAS (ICCV 2025): non-autoregressive selection of candidate mask groups, and its autoregressive baseline."""

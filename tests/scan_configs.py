"""Scan configurations the scan tests share."""

# linear activation, trained readouts: the exact closure (no sampling), compiled in about a second.
# 5 gamma0 x 2 eta0 x 2 P = 20 points, 2 groups (P) of 10 points, chunks of 6: 4 chunks.
TOML = """
[task]
name = "single_index"
D = 4
P = 12
P_test = 8
degree = 1

[model]
activation = "linear"

[train]
eta0 = 0.5
steps = 20
save_every = 10

[scan]
outputs = ["final", "grokking", "curves"]
chunk = 6
grok_threshold = 0.05

[scan.grid]
"model.gamma0" = [0.25, 0.5, 1.0, 2.0, 4.0]
eta0 = [0.25, 0.5]
"task.P" = [12, 16]
"""

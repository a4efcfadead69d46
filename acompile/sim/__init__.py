"""The simulator: the runtime that executes a mapped program (runtime), the analog chain's
steps and its one fusion (chain), the fast and reference executors of a layer's product
(fast, reference), and the digital addressing around the crossbars (vectors).
"""

"""subind-bench: reproduce the paper's figures and tables."""

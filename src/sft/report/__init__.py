"""Know the data before the GPUs start: token statistics, over-length policy, template fidelity, card, plots."""

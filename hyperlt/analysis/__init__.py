"""What is computed from a trained run: evaluation on the test-agnostic test sets, preference sweeps, goal-driven
choice, test-time adaptation, metrics, figures and the text formats of their reports."""

"""Column privacy policy, re-identification risk, differentially private training, membership inference."""

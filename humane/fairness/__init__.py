"""Group metrics with bootstrap intervals and disparity gaps: the one definition of each."""

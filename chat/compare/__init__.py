"""The comparison page: runs of streaming on vs off, their figures, verdict and chart."""

"""Training code for convention-rt: the ConvEntion model in PyTorch, data, fitting and export."""

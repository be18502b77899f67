"""Training: the recipe (train()), the one loop, optimizer and schedule."""

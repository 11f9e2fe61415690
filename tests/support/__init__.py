"""What the tests share: fakes that implement the ports, AWS set-up, trial machinery."""

"""What the tests share: real servers and brokers, a small pump, peers and fault injectors."""

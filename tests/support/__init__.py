"""What the tests stand on: the Stripe-compatible server, moto, shops served on loopback, factories."""

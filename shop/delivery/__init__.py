"""The inlets through which Stripe's events reach fulfilment: the webhook route and the SQS poller."""

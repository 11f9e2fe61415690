"""Order events on the wire (DESIGN §12): their JSON, signatures, schemas, and delivery.

The events themselves are derived in `engine.core.events` (pure); this package turns them into
bytes, signs them, and moves them: the outbox stream to EventBridge (`publisher`), EventBridge
to a webhook (`webhook`) or Telegram (`telegram`), and the local stack's relay (`local`).
"""

"""The customer side: contact data on orders (PIPL), status-node messages, instant answers
to inquiries, unpaid-order deadlines and the nearest on-duty staff (docs/customer.md)."""

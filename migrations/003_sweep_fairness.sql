-- When the reconciliation sweep last asked the provider about an order (null: never).
-- The sweep checks the least recently checked pending orders first, so orders the
-- provider cannot settle (abandoned checkouts, junk orders) do not starve the rest.
ALTER TABLE orders ADD COLUMN last_checked_at timestamptz;

-- The sweep's query: pending orders created within the window, ordered by
-- last_checked_at NULLS FIRST, created_at. The window bound is the selective part
-- (pending orders older than the window stay pending forever and pile up), so
-- the index leads with created_at and carries last_checked_at: the range scan
-- reads only the window's entries and the sort key comes with them.
DROP INDEX orders_pending_by_created_at;
CREATE INDEX orders_pending_by_created_at ON orders (created_at) INCLUDE (last_checked_at) WHERE status = 'pending';

-- An event of a type errand does not handle is recorded by its id (its replay is a
-- duplicate), but it may carry no providerRef at all.
ALTER TABLE payment_events ALTER COLUMN provider_ref DROP NOT NULL;

-- When the reconciliation sweep last asked the provider about an order (null: never).
-- The sweep checks the least recently checked pending orders first, so orders the
-- provider cannot settle (abandoned checkouts, junk orders) do not starve the rest.
ALTER TABLE orders ADD COLUMN last_checked_at timestamptz;

-- No index on last_checked_at, on purpose. The sweep's query (pending, created within
-- the window, ORDER BY last_checked_at NULLS FIRST, created_at LIMIT n) is served by
-- 002's partial index orders_pending_by_created_at: a range scan over the window's
-- pending orders and a top-N sort. An index leading with last_checked_at would walk
-- every pending order that ever left the window (they stay pending forever, and come
-- first in that order) before reaching the window: with 1M such orders, 2,962 pages
-- and 71 ms against 102 pages and 13 ms (EXPLAIN ANALYZE, 5,000 pending in the window).
-- Unindexed, the sweep's stamps of last_checked_at stay HOT updates.

-- An event of a type errand does not handle is recorded by its id (its replay is a
-- duplicate), but it may carry no providerRef at all.
ALTER TABLE payment_events ALTER COLUMN provider_ref DROP NOT NULL;

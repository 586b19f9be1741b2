-- A metering pass charges only the containers that are due (billing keeps
-- these two columns with every charge, credit and start): paid_until is
-- when a metered container's balance runs out (unix ms; NULL unless
-- metered, or not yet scheduled: then it is due), paid_ms all the running
-- time its credits pay for (what the low-balance warning is a share of).
ALTER TABLE containers ADD COLUMN paid_until INTEGER;
ALTER TABLE containers ADD COLUMN paid_ms INTEGER NOT NULL DEFAULT 0;
CREATE INDEX containers_metered ON containers (running_since) WHERE running_since IS NOT NULL;
CREATE INDEX containers_paid_until ON containers (paid_until) WHERE running_since IS NOT NULL;

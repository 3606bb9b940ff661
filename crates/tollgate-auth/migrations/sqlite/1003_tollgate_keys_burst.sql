-- A key's own burst: percent of each of its limits usable at once; NULL for the
-- configured default.
ALTER TABLE tollgate_keys ADD COLUMN burst INTEGER CHECK (burst BETWEEN 1 AND 1000);

-- Records with impossible values are kept but marked, with their issues as JSON; reports
-- leave them out. Audit entries carry the district they concern, so a district admin reads
-- only their own district's entries.
ALTER TABLE visits ADD COLUMN invalid TEXT;
ALTER TABLE people ADD COLUMN invalid TEXT;
ALTER TABLE audit ADD COLUMN district TEXT;
CREATE INDEX audit_district ON audit(district, seq);

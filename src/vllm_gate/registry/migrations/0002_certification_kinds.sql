-- A certification row names what the run was: certified, not certified, partial, interrupted, or a
-- rehearsal (the simulator answered) that passed or failed. History shows every kind of run.
ALTER TABLE certifications DROP CONSTRAINT certifications_verdict_check;
UPDATE certifications SET verdict = CASE verdict WHEN 'passed' THEN 'certified' ELSE 'not_certified' END;
ALTER TABLE certifications ADD CONSTRAINT certifications_verdict_check CHECK (verdict IN (
    'certified', 'not_certified', 'partial', 'interrupted', 'rehearsal_passed', 'rehearsal_failed',
    'rehearsal_partial', 'rehearsal_interrupted'));

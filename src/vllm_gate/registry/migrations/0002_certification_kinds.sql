-- A certification row names what the run was: certified, not certified, partial, interrupted, or a
-- rehearsal (the simulator answered) that passed or failed. History shows every kind of run.
-- Rows from before the contract: a run whose engine was the simulator was a rehearsal, whatever it
-- printed; the others keep what they claimed.
ALTER TABLE certifications DROP CONSTRAINT certifications_verdict_check;
UPDATE certifications SET verdict = CASE
    WHEN summary ->> 'engine' = 'sim' THEN 'rehearsal_' || verdict
    WHEN verdict = 'passed' THEN 'certified'
    ELSE 'not_certified' END;
ALTER TABLE certifications ADD CONSTRAINT certifications_verdict_check CHECK (verdict IN (
    'certified', 'not_certified', 'partial', 'interrupted', 'rehearsal_passed', 'rehearsal_failed',
    'rehearsal_partial', 'rehearsal_interrupted'));

-- What an update job decided to do (create, update in place, replace, ...), stored with its
-- first IN_PROGRESS event: a later attempt of the job (a retry, or another engine taking it
-- over) carries out that decision instead of deciding again, so that a replacement an earlier
-- attempt may have created (its response lost) is never left behind by a different choice.
ALTER TABLE jobs ADD COLUMN decision TEXT;

-- A retry of a task whose agent change was kept on a WIP branch starts from that change:
-- the branch the attempt started from, recorded when it is launched, so that a retry of
-- a retry that kept nothing new still starts from the first attempt's change.
ALTER TABLE tasks
    ADD COLUMN resume_branch text CHECK (resume_branch ~ '^bg-agent/wip/[0-9]+$');

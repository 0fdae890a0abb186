-- Coding agents: the rounds an agent ran (the verifier loop), the tokens and money its CLI
-- reported using (summed over rounds; the cost in millionths of a US dollar, NULL when no
-- CLI reported one), and the branch a failed task's unvalidated change was kept on.
ALTER TABLE tasks
    ADD COLUMN agent_provider text,
    ADD COLUMN agent_rounds integer NOT NULL DEFAULT 0 CHECK (agent_rounds >= 0),
    ADD COLUMN agent_input_tokens bigint NOT NULL DEFAULT 0 CHECK (agent_input_tokens >= 0),
    ADD COLUMN agent_output_tokens bigint NOT NULL DEFAULT 0 CHECK (agent_output_tokens >= 0),
    ADD COLUMN agent_cost_microusd bigint CHECK (agent_cost_microusd >= 0),
    ADD COLUMN wip_branch text CHECK (wip_branch LIKE 'bg-agent/wip/%');

-- Zoho stores probabilities as percents; the marts multiply amounts by a fraction. A value outside 0..1 means
-- a percent slipped through unconverted (weighted amounts would be 100 times too large).

select
    'deal' as source_of_probability,
    deal_id as id,
    probability

from {{ ref('stg_zoho__deals') }}
where probability < 0 or probability > 1

union all

select
    'stage' as source_of_probability,
    stage_id as id,
    probability

from {{ ref('stg_zoho__deal_stages') }}
where probability < 0 or probability > 1

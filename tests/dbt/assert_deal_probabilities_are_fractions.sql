-- Zoho stores probabilities as percents; the marts multiply amounts by a fraction. A value outside 0..1 in
-- the probability the marts weigh with means a percent slipped through unconverted (weighted amounts would be
-- 100 times too large). A deal whose CRM probability is itself outside 0..100% is a data-quality issue
-- instead: data_quality_issues lists it and the marts leave its probability empty.

select
    'deal' as source_of_probability,
    deal_id as id,
    probability

from {{ ref('deals') }}
where probability < 0 or probability > 1

union all

select
    'stage' as source_of_probability,
    stage_id as id,
    probability

from {{ ref('stg_zoho__deal_stages') }}
where probability < 0 or probability > 1

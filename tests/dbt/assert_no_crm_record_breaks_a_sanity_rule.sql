-- Records the sales team should fix in the CRM, one row per record and rule. Only a warning: the marts already
-- keep these values out of their sums (see data_quality_issues), so the daily summary is still produced, with
-- the count visible in the test results and in the briefing.
{{ config(severity='warn') }}

select
    module,
    rule,
    count(*) as records

from {{ ref('data_quality_issues') }}
group by module, rule

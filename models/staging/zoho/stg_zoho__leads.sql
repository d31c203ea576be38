with

source as (

    {{ zoho_live_records('leads', module='Leads') }}

),

renamed as (

    select

{{ zoho_lead_fields() }},

        ----------  the sync that last wrote this lead: dlt's load id
        cast(_dlt_load_id as {{ dbt.type_string() }}) as load_id
        {#- The Zoho fields passed through to the marts (var zoho_lead_pass_through_columns), typed as loaded. #}
        {{- zoho_pass_through_select('lead', source('zoho', 'leads'), from_raw=true) }}

    from source

)

select * from renamed

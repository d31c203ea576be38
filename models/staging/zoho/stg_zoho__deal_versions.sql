with

source as (

    {{ zoho_source_or_empty('deal_versions') }}

),

renamed as (

    select

{{ zoho_deal_fields() }},

        ----------  the sync that loaded (or last re-read) this version: dlt's load id
        cast(_dlt_load_id as {{ dbt.type_string() }}) as load_id
        {#- The Zoho fields passed through to the marts (var zoho_deal_pass_through_columns), typed as loaded. #}
        {{- zoho_pass_through_select('deal', source('zoho', 'deal_versions'), from_raw=true) }}

    from source

)

select * from renamed

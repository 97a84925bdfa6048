-- Consent grants and withdrawals from the consent extract, one row per event as of the run date (an event
-- extracted twice is kept once), with the subject's email and phone normalised like every other record's so
-- the event can be attributed to a person.

with

source as (

    select * from {{ source('crm', 'consent_events') }}

),

latest as (

    select * from source
    {{ as_of_latest_version(
        'purpose, occurred_at, subject_email, subject_phone, customer_id, source',
        happened_at='occurred_at'
    ) }}

),

renamed as (

    select
        -- a missing part hashes as '' in its own place, so (email a, no phone) and (no email, phone a) differ
        md5({{ composite_id(
            ['purpose', 'occurred_at', 'subject_email', 'subject_phone', 'customer_id', 'source'], missing="''"
        ) }}) as consent_event_id,
        {{ clean_email('subject_email') }} as email_cleaned,
        nullif(trim(subject_phone), '') as phone_raw,
        {{ phone_e164('subject_phone', 'null') }} as phone_cleaned,
        nullif(trim(customer_id), '') as customer_id,
        regexp_replace(lower(trim(purpose)), '[^a-z0-9]+', '_', 'g') as purpose,
        granted as is_granted,
        occurred_at,
        coalesce(nullif(lower(trim(source)), ''), 'consent_extract') as source,  -- noqa: RF04
        _batch_id as batch_id,
        _extracted_at as extracted_at
    from latest

),

validated as (

    select
        consent_event_id,
        {{ validated_email_and_phone() }}
        customer_id,
        purpose,
        is_granted,
        occurred_at,
        source,
        batch_id,
        extracted_at,
        nullif(concat_ws(
            '; ',
            {{ email_and_phone_problems() }},
            case
                when email_cleaned is null and phone_raw is null and customer_id is null
                    then 'subject: no email, phone or customer id'
            end
        ), '') as invalid_reasons
    from renamed

)

select * from validated

{#- Folded first name with common English and German short forms mapped to their full form (Bob = Robert). -#}
{% macro canonical_first_name(key) -%}
    {%- set short_forms = {
        'bob': 'robert', 'bobby': 'robert', 'rob': 'robert', 'robbie': 'robert', 'bert': 'robert',
        'bill': 'william', 'billy': 'william', 'will': 'william', 'willy': 'william', 'liam': 'william',
        'jim': 'james', 'jimmy': 'james', 'jamie': 'james', 'mike': 'michael', 'mick': 'michael',
        'micha': 'michael', 'dave': 'david', 'davy': 'david', 'tom': 'thomas', 'tommy': 'thomas',
        'dan': 'daniel', 'danny': 'daniel', 'joe': 'joseph', 'joey': 'joseph', 'sam': 'samuel',
        'nick': 'nicholas', 'alex': 'alexander', 'sascha': 'alexander', 'ben': 'benjamin',
        'tony': 'anthony', 'toni': 'anton', 'steve': 'stephen', 'steven': 'stephen', 'matt': 'matthew',
        'andy': 'andrew', 'andi': 'andreas', 'pete': 'peter', 'tim': 'timothy', 'timo': 'timotheus',
        'ed': 'edward', 'eddie': 'edward', 'ted': 'edward', 'fred': 'frederick', 'freddie': 'frederick',
        'harry': 'henry', 'jack': 'john', 'johnny': 'john', 'jenny': 'jennifer', 'jen': 'jennifer',
        'sue': 'susan', 'susie': 'susan', 'maggie': 'margaret', 'meg': 'margaret', 'peggy': 'margaret',
        'liz': 'elizabeth', 'lizzie': 'elizabeth', 'beth': 'elizabeth', 'betty': 'elizabeth',
        'kate': 'katherine', 'katie': 'katherine', 'kathy': 'katherine', 'cathy': 'catherine',
        'patty': 'patricia', 'trish': 'patricia', 'debbie': 'deborah', 'becky': 'rebecca', 'vicky': 'victoria',
        'hans': 'johannes', 'jo': 'johannes', 'sepp': 'josef', 'jupp': 'josef', 'fritz': 'friedrich',
        'kathi': 'katharina', 'uli': 'ulrich', 'willi': 'wilhelm', 'gabi': 'gabriele', 'steffi': 'stefanie',
        'susi': 'susanne', 'moni': 'monika', 'basti': 'sebastian', 'flo': 'florian', 'max': 'maximilian',
        'klaus': 'nikolaus', 'heinz': 'heinrich', 'bernd': 'bernhard', 'rudi': 'rudolf', 'wolf': 'wolfgang',
        'manni': 'manfred', 'conny': 'cornelia', 'lotte': 'charlotte', 'lena': 'helena', 'leni': 'helena',
        'hansi': 'johannes', 'resi': 'theresa', 'franzi': 'franziska', 'jule': 'julia', 'caro': 'caroline',
        'nils': 'nikolaus', 'chris': 'christopher', 'matze': 'matthias', 'olli': 'oliver', 'frank': 'franz',
    } -%}
    case {{ key }}
        {%- for short, full in short_forms.items() %}
        when '{{ short }}' then '{{ full }}'
        {%- endfor %}
        else {{ key }}
    end
{%- endmacro %}

{#- node -> person: the resolved graph's 'self' rows, one per node (int_identity_graph_resolved's contract). -#}
{% macro node_persons(graph) -%}
    select
        left_node as node_id,
        left_person_id as person_id
    from {{ graph }}
    where match_rule = 'self'
{%- endmacro %}

{#- The graph node a staged record attaches to: a person record is its own node, an event or order its strongest
    identifier, a record without any identifier stands alone. The one definition: int_identity_records_unioned
    builds the graph's records with it, and the event marts find a record's person as its node's
    (node_persons), a join to one row per node (a few million at 1M customers) instead of to identity.person_map's
    row per record (70M); the same person as person_map's, which is this join. `record`: the alias qualifying
    the source's staged columns, if any. -#}
{% macro record_node(source_entity, record=none) -%}
    {%- set r = record ~ '.' if record else '' -%}
    {%- if source_entity == 'crm_contacts' -%}
    'crm:' || {{ r }}contact_id
    {%- elif source_entity == 'shop_customers' -%}
    'customer:' || {{ r }}customer_id
    {%- elif source_entity == 'shop_orders' -%}
    'customer:' || {{ r }}customer_id
    {%- elif source_entity == 'web_events' -%}
    case
        when {{ r }}customer_id is not null then 'customer:' || {{ r }}customer_id
        when {{ r }}anonymous_id is not null then 'anon:' || {{ r }}anonymous_id
        else 'web_events:' || {{ r }}event_id
    end
    {%- elif source_entity == 'email_events' -%}
    coalesce('email:' || {{ r }}email, 'email_events:' || {{ r }}event_id)
    {%- elif source_entity == 'pos_transactions' -%}
    coalesce(
        'loyalty:' || {{ r }}loyalty_id, 'phone:' || {{ r }}phone_e164, 'email:' || {{ r }}email,
        'pos_transactions:' || {{ r }}transaction_id
    )
    {%- else -%}
    {{ exceptions.raise_compiler_error("record_node: no node rule for source entity '" ~ source_entity ~ "'") }}
    {%- endif -%}
{%- endmacro %}

{#- identity.person_map's row of each record of `records` (int_identity_records_unioned's columns) through its node
    in `nodes` (int_identity_nodes_personed): a person record joined its person by its node's strongest link (or
    is the person's own record), an event or order by the identifier it attaches with. The one definition, for
    the full build (int_records_personed) and the daily one (int_records_remapped). -#}
{% macro personed_records(records, nodes) -%}
    select
        {{ records }}.source_entity,
        {{ records }}.source_record_id,
        {{ nodes }}.person_id,
        case
            when {{ records }}.is_person_record then coalesce({{ nodes }}.match_rule, 'own_record')
            else {{ records }}.attach_rule
        end as match_rule,
        coalesce({{ nodes }}.match_probability, 1.0) as match_probability
    from {{ records }}
    inner join {{ nodes }}
        on {{ records }}.node_id = {{ nodes }}.node_id
{%- endmacro %}
